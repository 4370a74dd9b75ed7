"""The artifact quota (`artifactQuotaMB` per `artifactQuotaWindowMinutes`, per client): what
one client may store. The store counts (Redis: one count for every replica).

A compile is refused before it runs once its client has reached the quota, and its artifact
is refused before it is published when it would take the client past the quota (the compile
then stored nothing). Cache hits store nothing and are never refused. A refusal is a 429
whose Retry-After is the time left in the client's window.
"""

from __future__ import annotations

import math
from typing import Final

import attrs

from emcc_trio.errors import ArtifactQuotaError
from emcc_trio.storage.base import Store

MB: Final = 1024 * 1024


@attrs.frozen
class ArtifactQuota:
    store: Store
    limit_bytes: int
    window_seconds: float

    def _terms(self) -> str:
        return (
            f"artifactQuotaMB allows {self.limit_bytes / MB:g} MB of artifacts per client "
            f"every {self.window_seconds / 60:g} minutes"
        )

    async def check(self, client: str) -> None:
        """Raise ArtifactQuotaError when `client` has used its quota up."""
        charge = await self.store.charge_quota(client, 0, self.limit_bytes, self.window_seconds)
        if not charge.allowed:
            raise ArtifactQuotaError(
                f"this client has stored {charge.used} bytes of artifacts in this window: "
                f"{self._terms()}; try again in {_seconds(charge.reset_seconds)} s",
                retry_after=_seconds(charge.reset_seconds),
            )

    async def charge(self, client: str, nbytes: int, job_id: str) -> None:
        """Count an artifact of `nbytes` for `client`, or raise ArtifactQuotaError (then the
        artifact must not be published)."""
        charge = await self.store.charge_quota(
            client, nbytes, self.limit_bytes, self.window_seconds
        )
        if not charge.allowed:
            raise ArtifactQuotaError(
                f"the artifact ({nbytes} bytes) would take this client past its quota "
                f"({charge.used} bytes stored in this window): {self._terms()}; nothing was "
                f"stored; try again in {_seconds(charge.reset_seconds)} s",
                job_id=job_id,
                retry_after=_seconds(charge.reset_seconds),
            )


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))
