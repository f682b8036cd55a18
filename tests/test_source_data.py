"""The source data is never modified: the real scans' checksums, taken when the session starts (conftest.py),
equal the checksums after every other test of the session has run: the bad-input corpus
(test_bad_inputs.py, test_boundaries*.py, test_config_checks.py, test_data_checks.py) and everything else."""
import pytest
from conftest import source_fingerprint

from covgan_utils.data import sources


@pytest.mark.after_everything
def test_source_data_checksums_are_equal_before_and_after_the_whole_session(request):
    folder, before = request.config.source_before
    if before is None:
        pytest.skip("needs the real COVID-CT scans as a folder (the data search order found none)")
    after = source_fingerprint(folder)
    changed = sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))
    assert changed == [], f"{len(changed)} source files changed, added or removed: {changed[:5]}"
    published = folder / "SHA256SUMS"
    if published.is_file():  # the working copy's own list: the scans are also what they were when it was made
        sums = dict(reversed(line.split(None, 1)) for line in published.read_text().splitlines() if line.strip())
        assert {name: sources.sha256_of(folder / name) for name in sums} == sums
    assert len(before) > 600
