"""The shipped Fashion-MNIST sample is the first 500 test images; bad sample files are refused."""
import numpy as np
import pytest

from refq.data import fashion_mnist
from refq.pretrained import FMNIST_SAMPLE


def test_shipped_sample_is_the_head_of_the_test_set():
    images, labels = fashion_mnist.load_sample(FMNIST_SAMPLE)
    assert images.shape == (500, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))
    try:
        test_images, test_labels = fashion_mnist.load("test")
    except ValueError:
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    np.testing.assert_array_equal(images, test_images[:500])
    np.testing.assert_array_equal(labels, test_labels[:500])


def test_load_sample_refuses_other_files(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 28, 28), np.float32), labels=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="float32"):
        fashion_mnist.load_sample(tmp_path / "bad.npz")
    np.savez(tmp_path / "extra.npz", images=np.zeros((3, 28, 28), np.uint8), labels=np.zeros(3), x=np.zeros(1))
    with pytest.raises(ValueError, match="members"):
        fashion_mnist.load_sample(tmp_path / "extra.npz")
    with pytest.raises(ValueError, match="n=0"):
        fashion_mnist.save_sample(tmp_path / "s.npz", 0)
