"""The HTTP client of the ``vxnet`` command and the tests: one request, its JSON answer."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "fetch_json"]


class ApiError(Exception):
    """The API of a running node could not be reached or answered badly."""


def fetch_json(url: str, *, method: str = "GET", body: Any = None, timeout: float = 5.0) -> Any:
    """Send a request to ``url`` and decode the JSON answer.

    Raises:
        ApiError: No answer, an HTTP error, or not JSON (the message says which, and where).
    """
    import httpx

    try:
        with httpx.Client(trust_env=False, follow_redirects=True, timeout=timeout) as client:
            response = client.request(method, url, json=body)
        response.raise_for_status()
        return response.json()
    except httpx.HTTPStatusError as exc:
        try:
            detail = exc.response.json().get("error", "")
        except ValueError:
            detail = ""
        suffix = f": {detail}" if detail else ""
        raise ApiError(f"{url}: HTTP {exc.response.status_code}{suffix}") from exc
    except httpx.HTTPError as exc:
        raise ApiError(f"{url}: {exc or type(exc).__name__} (is the agent running?)") from exc
    except ValueError as exc:
        raise ApiError(f"{url}: the answer is not JSON") from exc
