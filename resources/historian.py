"""HistorianResource: the historical database (device registry, past readings), any SQLAlchemy URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from dagster import ConfigurableResource

from iot_lake.sources.historian import create_engine


class HistorianResource(ConfigurableResource):
    """The historical database (device registry, past readings): any SQLAlchemy URL."""

    url: str

    @contextmanager
    def engine(self) -> Iterator[sa.Engine]:
        """An engine for one step; its pooled connections are closed when the step is done."""
        engine = create_engine(self.url)
        try:
            yield engine
        finally:
            engine.dispose()
