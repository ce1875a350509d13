"""Joint CNN-CTC text spotter: CTC loss and decoding, alphabet, text metrics.

Submodules are imported explicitly (`from refq.spotter import ctc`); this
package file imports nothing so that `import refq.spotter` stays cheap.
"""
