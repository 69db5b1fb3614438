"""Reading the environment while another thread changes it (the fork server's start sets and
restores the nanny's settings while the planning thread builds its log's redactor)."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.run.dask_spec import worker_environment
from pipeline.secrets import known


class Vanishing(dict[str, str]):
    """An environment whose first variable is taken out as soon as its names are listed, as a
    thread restoring it would; reading its value then raises KeyError, as os.environ does."""

    def __iter__(self) -> Iterator[str]:
        names = list(super().__iter__())
        self.pop(names[0])
        return iter(names)

    def items(self):  # type: ignore[override]
        return ((name, self[name]) for name in self)


def test_credentials_and_worker_settings_survive_a_variable_taken_out_meanwhile() -> None:
    env = Vanishing(OMP_NUM_THREADS="1", AWS_SECRET_ACCESS_KEY="s3cr3t-value", GDAL_CACHEMAX="512")
    assert "s3cr3t-value" in known(env)
    env = Vanishing(OMP_NUM_THREADS="1", GDAL_CACHEMAX="512")
    assert worker_environment(env)["GDAL_CACHEMAX"] == "512"
