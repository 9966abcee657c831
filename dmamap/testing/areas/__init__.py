"""The conformance rules, one module per area.

Importing this package registers every rule in
:data:`dmamap.testing.rule.RULES`, in suite order: the order of :data:`AREAS`.
"""

from __future__ import annotations

# isort: off
from dmamap.testing.areas import coherency
from dmamap.testing.areas import attributes
from dmamap.testing.areas import page_descriptors
from dmamap.testing.areas import scatter_gather
from dmamap.testing.areas import unmap
from dmamap.testing.areas import resources
from dmamap.testing.areas import bad_inputs
from dmamap.testing.areas import io
from dmamap.testing.areas import kernel_side
from dmamap.testing.areas import large_pages
from dmamap.testing.areas import model
from dmamap.testing.areas import streaming
from dmamap.testing.areas import remote_access
# isort: on

__all__ = ["AREAS"]

#: The area modules, in suite order (each registers its rules when imported).
AREAS = (coherency, attributes, page_descriptors, scatter_gather, unmap, resources, bad_inputs, io, kernel_side,
         large_pages, model, streaming, remote_access)
