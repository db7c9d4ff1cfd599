import pytest

from imgtrans.models.options import Pix2PixConfig
from imgtrans.training.lr_schedules import lr_factor


def test_linear_policy_holds_then_decays_to_zero():
    cfg = Pix2PixConfig(n_epochs=2, n_epochs_decay=2)
    assert [lr_factor(cfg, e) for e in (0, 1, 2, 3, 4)] == pytest.approx([1, 1, 1, 0.5, 0])


def test_explicit_epochs_stretch_the_linear_schedule():
    cfg = Pix2PixConfig(n_epochs=1, n_epochs_decay=1, epochs=10)
    assert [lr_factor(cfg, e) for e in (0, 5, 7.5, 10)] == pytest.approx([1, 1, 0.5, 0])


def test_cosine_policy_spans_the_whole_run():
    cfg = Pix2PixConfig(lr_policy="cosine", epochs=4)
    assert [lr_factor(cfg, e) for e in (0, 2, 4)] == pytest.approx([1, 0.5, 0])
