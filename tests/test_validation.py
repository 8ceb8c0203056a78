import numpy as np
import pytest
import torch

from ofg.validation import check_displacement, check_image, check_image_and_displacement, check_same_shape


def test_valid_inputs_return_the_spatial_rank():
    assert check_image(torch.rand(2, 1, 4, 5, 6)) == 3
    assert check_image(torch.rand(2, 3, 4, 5)) == 2
    assert check_displacement(torch.rand(1, 3, 4, 5, 6)) == 3
    assert check_displacement(torch.rand(1, 2, 4, 5)) == 2
    assert check_image_and_displacement(torch.rand(1, 1, 4, 5, 6), torch.rand(3, 3, 4, 5, 6)) == 3
    assert check_same_shape(torch.rand(1, 1, 4, 5), torch.rand(1, 1, 4, 5), "a", "b") == 2


@pytest.mark.parametrize("value,message", [
    (np.zeros((1, 1, 4, 4, 4)), "moving: expected a torch.Tensor, got ndarray"),
    (torch.rand(4, 4, 4), r"moving: expected shape \(B,C,D,H,W\) or \(B,C,H,W\), got \(4, 4, 4\) \(3 dimensions\)"),
    (torch.rand(1, 1, 1, 4, 4, 4), "got \\(1, 1, 1, 4, 4, 4\\) \\(6 dimensions\\)"),
    (torch.zeros(1, 1, 4, 4, 4, dtype=torch.int64), "moving: expected a floating-point tensor, got torch.int64"),
    (torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool), "floating-point tensor, got torch.bool"),
])
def test_check_image_messages(value, message):
    with pytest.raises(ValueError, match=message):
        check_image(value, "moving")


def test_check_displacement_messages():
    with pytest.raises(ValueError, match=r"flow: expected 3 channels for a 3-D field of shape \(B,3,D,H,W\), "
                                         r"got \(1, 1, 4, 4, 4\)"):
        check_displacement(torch.rand(1, 1, 4, 4, 4), "flow")
    with pytest.raises(ValueError, match=r"expected 2 channels for a 2-D field of shape \(B,2,H,W\)"):
        check_displacement(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="floating-point"):
        check_displacement(torch.zeros(1, 3, 4, 4, 4, dtype=torch.int32))


def test_check_image_and_displacement_messages():
    with pytest.raises(ValueError, match=r"image is 2-D \(1, 1, 4, 4\) but displacement is 3-D"):
        check_image_and_displacement(torch.rand(1, 1, 4, 4), torch.rand(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match=r"displacement spatial shape \(4, 4, 5\) does not match image "
                                         r"spatial shape \(4, 4, 4\)"):
        check_image_and_displacement(torch.rand(1, 1, 4, 4, 4), torch.rand(1, 3, 4, 4, 5))
    with pytest.raises(ValueError, match="batch sizes differ: image has 2, displacement has 3"):
        check_image_and_displacement(torch.rand(2, 1, 4, 4, 4), torch.rand(3, 3, 4, 4, 4))


def test_check_same_shape_messages():
    with pytest.raises(ValueError, match=r"fixed has shape \(1, 1, 4, 4, 4\) but warped has shape \(1, 1, 4, 4, 5\)"):
        check_same_shape(torch.rand(1, 1, 4, 4, 4), torch.rand(1, 1, 4, 4, 5), "fixed", "warped")
    with pytest.raises(ValueError, match="warped: expected a floating-point tensor"):
        check_same_shape(torch.rand(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4, dtype=torch.int64), "fixed", "warped")
