"""Model definitions: functions over dicts of arrays keyed by the checkpoint's own names."""
