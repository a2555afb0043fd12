import pytest

from model.bucketing import make_batches, padded, padding_waste


def test_every_index_once_and_no_image_padded_beyond_its_bucket() -> None:
    shapes = [(300, 400), (991, 400), (512, 400), (320, 400), (500, 400), (990, 400), (305, 400)]
    batches = make_batches(shapes, batch_size=3, multiple=16, max_height_spread=64)
    seen = sorted(i for b in batches for i in b.indices)
    assert seen == list(range(len(shapes)))
    for b in batches:
        assert len(b.indices) <= 3
        for i in b.indices:
            assert b.height - padded(shapes[i][0], 16) <= 64
            assert b.height % 16 == 0
            assert b.width % 16 == 0


def test_a_300px_study_is_never_padded_to_991() -> None:
    batches = make_batches([(300, 400), (991, 400)], batch_size=8, multiple=16)
    assert len(batches) == 2
    assert padding_waste(batches, [(300, 400), (991, 400)]) < 0.05


def test_different_widths_never_share_a_batch() -> None:
    batches = make_batches([(320, 400), (320, 200)], batch_size=8, multiple=16)
    assert len(batches) == 2


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        make_batches([(32, 32)], batch_size=0, multiple=16)
