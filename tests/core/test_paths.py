"""lib.core.paths: URLs are recorded and printed without their credentials."""
from __future__ import annotations

import pytest

from lib.core.paths import has_credentials, is_redacted, redact_text, redact_url


@pytest.mark.parametrize("url, recorded", [
    ("http://alice:s3cret@mlflow.internal:5000", "http://***@mlflow.internal:5000"),
    ("https://token@host/path", "https://***@host/path"),                       # a token as the user
    ("ftp://u:p%40ss@ftp.team/runs?token=abc&region=eu", "ftp://***@ftp.team/runs?token=***&region=eu"),
    ("https://acct.blob/c?sv=2022&sig=AbC%2B&se=x", "https://acct.blob/c?sv=2022&sig=***&se=x"),
    ("https://b.s3/k?X-Amz-Credential=AK/1&X-Amz-Signature=ff", "https://b.s3/k?X-Amz-Credential=***&X-Amz-Signature=***"),
])
def test_credentials_are_replaced_and_the_rest_kept(url, recorded):
    assert redact_url(url) == recorded and redact_url(recorded) == recorded
    assert has_credentials(url) and not is_redacted(url)
    assert is_redacted(recorded) and not has_credentials(recorded)


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000", "s3://bucket/cars/runs", "/mnt/backup", "runs",
                                 "http://host/user@example.com/x", "databricks", "https://h/x?page=2"])
def test_urls_without_credentials_are_kept_as_given(url):
    assert redact_url(url) == url and not has_credentials(url) and not is_redacted(url)
    assert redact_url(None) is None and not has_credentials(None)


def test_messages_quoting_a_url_are_redacted():
    msg = "MlflowException: API request to http://alice:s3cret@h:5000/api/2.0/runs failed; see http://h/x"
    assert redact_text(msg) == "MlflowException: API request to http://***@h:5000/api/2.0/runs failed; see http://h/x"
