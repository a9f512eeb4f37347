"""The HTTP status a gRPC status stands for, so request metrics read the same on both ports.

The mapping of google.rpc.Code's documentation (and of grpc-gateway): a metric's `code`
label is an HTTP status whichever port a request came in on, so canary analysis counts a
failed gRPC call as a 5xx and a rejected one as a 4xx.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import grpc

Code = grpc.StatusCode

HTTP_STATUS_OF_GRPC: Final[Mapping[grpc.StatusCode, int]] = {
    Code.OK: 200,
    Code.CANCELLED: 499,  # the client went away: nginx's "client closed request"
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}
