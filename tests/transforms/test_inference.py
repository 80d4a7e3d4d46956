"""The model stages: the fault rule on its own, a handler called directly with a fake model, and
the RunInference transform under a TestPipeline."""

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from models.faults import ModelFault, RunFault, StageFailed
from transforms.decode import DecodedImage
from transforms.inference import BundleHandler, _ImageHandler, isolate_faults, run_model


def double_unless_negative(items):
    if any(x < 0 for x in items):
        raise ValueError(f"negative in {items}")
    return [2 * x for x in items]


def test_a_good_batch_runs_once():
    calls = []

    def function(items):
        calls.append(list(items))
        return double_unless_negative(items)

    assert isolate_faults(function, [1, 2, 3]) == [2, 4, 6]
    assert calls == [[1, 2, 3]]


def test_one_bad_item_fails_alone():
    outcomes = isolate_faults(double_unless_negative, [1, -2, 3])
    assert outcomes[0] == 2 and outcomes[2] == 6
    assert isinstance(outcomes[1], ValueError) and "[-2]" in str(outcomes[1])


def test_every_item_failing_alone_is_the_runs_fault():
    with pytest.raises(RunFault, match="all 3 images of a batch failed.*ValueError"):
        isolate_faults(double_unless_negative, [-1, -2, -3])


def test_a_single_failing_item_is_its_own_failure():
    (outcome,) = isolate_faults(double_unless_negative, [-1])
    assert isinstance(outcome, ValueError)


@pytest.mark.parametrize(
    "error",
    [
        ModelFault("NaN features"),
        FloatingPointError("NaN"),
        MemoryError("oom"),
        StageFailed("encode", MemoryError("oom")),  # as Captioner.caption raises it
    ],
)
def test_model_faults_stop_at_once_without_retries(error):
    calls = []

    def function(items):
        calls.append(items)
        raise error

    cause = error.error if isinstance(error, StageFailed) else error
    with pytest.raises(RunFault, match=type(cause).__name__):
        isolate_faults(function, [1, 2, 3])
    assert len(calls) == 1


def test_a_wrong_number_of_results_is_the_runs_fault():
    with pytest.raises(RunFault, match="returned 1 results for 2 images"):
        isolate_faults(lambda items: [0], [1, 2])


def image(uri, value):
    return DecodedImage(uri, np.full((4, 4, 3), value, np.uint8), 4, 4)


class FakeModel:
    pass


class FakeHandler(_ImageHandler):
    """Brightness per image; an all-black image raises, as a per-image fault would."""

    def __init__(self):
        super().__init__(min_batch_size=4, max_batch_size=4, share_across_processes=False)

    def load_model(self):
        return FakeModel()  # RunInference keeps models by weak reference

    def infer(self, model, pixels):
        if (pixels.reshape(len(pixels), -1).max(axis=1) == 0).any():
            raise StageFailed("encode", ValueError("black image"))
        return [float(p.mean()) for p in pixels]


def test_handler_returns_one_outcome_per_image():
    batch = [image("a", 10), image("b", 0), image("c", 30)]
    results = FakeHandler().run_inference(batch, FakeModel())
    assert [r.example.uri for r in results] == ["a", "b", "c"]
    assert results[0].inference == 10.0 and results[2].inference == 30.0
    assert isinstance(results[1].inference.error, ValueError)


def test_transform_isolates_one_bad_image_in_a_batch():
    images = [image(f"img{i}", 10 * i) for i in range(4)]  # img0 is black
    with test_pipeline.TestPipeline(runner=FnApiRunner()) as pipeline:
        outputs, failures, _ = run_model(
            pipeline | "Images" >> beam.Create(images),
            FakeHandler(),
            lambda img, brightness: (img.uri, brightness),
            stage="caption",
        )
        assert_that(
            outputs, equal_to([("img1", 10.0), ("img2", 20.0), ("img3", 30.0)]), label="Rows"
        )
        assert_that(
            failures | "Keys" >> beam.Map(lambda f: (f["image_uri"], f["stage"], f["error_type"])),
            equal_to([("img0", "encode", "ValueError")]),
            label="Failures",
        )


def test_bundle_handler_refuses_a_bundle_changed_since_launch(tiny_bundle):
    handler = BundleHandler(
        tiny_bundle,
        model_id="showtell-000000000000",
        search={"beam_size": 1, "max_length": 3},
        precision="fp32",
        min_batch_size=1,
        max_batch_size=2,
        share_across_processes=False,
    )
    with pytest.raises(RunFault, match="not showtell-000000000000 as at launch"):
        handler.load_model()
