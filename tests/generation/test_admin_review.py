"""The task admin's view of engine v2: the review flag as a column and a filter, provenance read-only."""
from __future__ import annotations

import re
from typing import Any, Callable

import pytest
from django.urls import reverse

from generation.models import GenerationTask, WorkerProcess

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:generation_generationtask_changelist"
ENGINE = {"backend": "local", "segmenter": "u2netp", "model": "u2netp.onnx", "model_sha256": "cd" * 32, "version": "2.0"}


def completed(make_task: Callable[..., GenerationTask], *, needs_review: bool) -> GenerationTask:
    task = make_task()
    [(task, token)] = GenerationTask.claim_next(WorkerProcess.objects.create(name=f"w-{task.pk}"))
    reasons = [{"code": "touches_frame", "message": "The cut-out touches the edge of the photo."}] if needs_review else []
    task.complete(token, result_name="results/r.jpg", content_type="image/jpeg",
                  compliance={"passed": True, "needs_review": needs_review, "review_reasons": reasons},
                  mask_name="masks/m.png", engine=ENGINE, needs_review=needs_review)
    return task


def listed_ids(page: str) -> set[int]:
    return {int(i) for i in re.findall(r'name="_selected_action" value="(\d+)"', page)}


def test_the_changelist_filters_on_needs_review(admin_client: Any, make_task: Callable[..., GenerationTask]) -> None:
    doubtful = completed(make_task, needs_review=True)
    clean = completed(make_task, needs_review=False)
    waiting = make_task()

    everything = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert listed_ids(everything) == {doubtful.pk, clean.pk, waiting.pk}
    assert "needs_review__exact=1" in everything  # the filter is offered
    flagged = admin_client.get(reverse(CHANGELIST), {"needs_review__exact": "1"}).content.decode()
    assert listed_ids(flagged) == {doubtful.pk}
    fine = admin_client.get(reverse(CHANGELIST), {"needs_review__exact": "0"}).content.decode()
    assert listed_ids(fine) == {clean.pk, waiting.pk}


def test_the_change_page_shows_provenance_and_reasons_read_only(
    admin_client: Any, make_task: Callable[..., GenerationTask]
) -> None:
    task = completed(make_task, needs_review=True)
    page = admin_client.get(reverse("admin:generation_generationtask_change", args=[task.pk])).content.decode()
    assert "u2netp.onnx" in page and "cd" * 32 in page
    assert "touches_frame" in page and "The cut-out touches the edge of the photo." in page
    assert 'name="engine"' not in page  # shown, not editable
    assert reverse("admin:generation_generationtask_image", args=[task.pk, "mask"]) in page
