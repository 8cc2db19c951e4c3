"""The machine-readable reasons a task failed: the ``error_code`` of the task JSON and its events.

One enum for every part that names them: the engine's ``EngineError``, the
worker, the model's rescue, the serializers and the OpenAPI schema. It imports
no model, so the engine (pure image work) may use it. The page's text table
(``static/app/queue.js``) and the Python client keep a copy each, held in step
by tests. Labels are for operators (the admin's filter); users read the page's
friendlier text and the task's ``error_message``.
"""
from __future__ import annotations

from django.db import models


class ErrorCode(models.TextChoices):
    # The photo itself: permanent, retrying will not help.
    INVALID_IMAGE = "invalid_image", "the file is not a readable photo"
    IMAGE_TOO_LARGE = "image_too_large", "the photo has too many pixels to process"
    NO_PRODUCT_FOUND = "no_product_found", "no product could be told apart from the background"
    PRODUCT_ALTERED = "product_altered", "the generated image no longer shows the same product"
    # The image service (Gemini): timeouts, errors and empty answers are retried.
    UPSTREAM_TIMEOUT = "upstream_timeout", "the image service did not answer in time"
    UPSTREAM_ERROR = "upstream_error", "the image service failed or refused the request"
    SAFETY_BLOCK = "safety_block", "the image service declined the photo"
    NO_IMAGE_RETURNED = "no_image_returned", "the image service answered without an image"
    # The queue.
    INPUT_MISSING = "input_missing", "the uploaded file is no longer stored"
    INVALID_OPTIONS = "invalid_options", "the task's stored options no longer parse"
    EXPIRED = "expired", "the task was not started before its deadline (expires_in)"
    FETCH_FAILED = "fetch_failed", "the photo could not be fetched from its image_url"
    WORKER_LOST = "worker_lost", "the worker processing the task stopped responding"
    INTERNAL_ERROR = "internal_error", "an unexpected error in the service"
