"""Type stubs for proxy.protocol.h2frame (compiled from h2frame.py with h2frame.pxd)."""

from collections.abc import Sequence
from typing import Final, final

from proxy.protocol.sentinel import NeedMore as _NeedMore

NEED_MORE: Final[_NeedMore]

DATA: Final[int]
HEADERS: Final[int]
PRIORITY: Final[int]
RST_STREAM: Final[int]
SETTINGS: Final[int]
PUSH_PROMISE: Final[int]
PING: Final[int]
GOAWAY: Final[int]
WINDOW_UPDATE: Final[int]
CONTINUATION: Final[int]
FRAME_TYPE_NAMES: Final[dict[int, str]]

FLAG_END_STREAM: Final[int]
FLAG_ACK: Final[int]
FLAG_END_HEADERS: Final[int]
FLAG_PADDED: Final[int]
FLAG_PRIORITY: Final[int]

NO_ERROR: Final[int]
PROTOCOL_ERROR: Final[int]
INTERNAL_ERROR: Final[int]
FLOW_CONTROL_ERROR: Final[int]
SETTINGS_TIMEOUT: Final[int]
STREAM_CLOSED: Final[int]
FRAME_SIZE_ERROR: Final[int]
REFUSED_STREAM: Final[int]
CANCEL: Final[int]
COMPRESSION_ERROR: Final[int]
CONNECT_ERROR: Final[int]
ENHANCE_YOUR_CALM: Final[int]
INADEQUATE_SECURITY: Final[int]
HTTP_1_1_REQUIRED: Final[int]
ERROR_CODE_NAMES: Final[dict[int, str]]

SETTINGS_HEADER_TABLE_SIZE: Final[int]
SETTINGS_ENABLE_PUSH: Final[int]
SETTINGS_MAX_CONCURRENT_STREAMS: Final[int]
SETTINGS_INITIAL_WINDOW_SIZE: Final[int]
SETTINGS_MAX_FRAME_SIZE: Final[int]
SETTINGS_MAX_HEADER_LIST_SIZE: Final[int]
SETTINGS_ENABLE_CONNECT_PROTOCOL: Final[int]
SETTINGS_NO_RFC7540_PRIORITIES: Final[int]

DEFAULT_MAX_FRAME_SIZE: Final[int]
MAX_MAX_FRAME_SIZE: Final[int]
DEFAULT_INITIAL_WINDOW_SIZE: Final[int]
MAX_WINDOW_SIZE: Final[int]
MAX_STREAM_ID: Final[int]
DEFAULT_MAX_HEADER_BLOCK_SIZE: Final[int]
FRAME_HEADER_SIZE: Final[int]
PREFACE: Final[bytes]

class H2Error(Exception):
    code: int
    reason: str
    stream_id: int  # 0: connection error (GOAWAY); otherwise stream error (RST_STREAM)
    def __init__(self, code: int, reason: str, stream_id: int = 0) -> None: ...
    @property
    def is_connection_error(self) -> bool: ...

@final
class Frame:
    @property
    def type(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def stream_id(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def data(self) -> bytes: ...
    @property
    def error_code(self) -> int: ...
    @property
    def last_stream_id(self) -> int: ...
    @property
    def promised_stream_id(self) -> int: ...
    @property
    def increment(self) -> int: ...
    @property
    def depends_on(self) -> int: ...
    @property
    def weight(self) -> int: ...
    @property
    def exclusive(self) -> bool: ...
    @property
    def settings(self) -> list[tuple[int, int]] | None: ...
    @property
    def end_stream(self) -> bool: ...
    @property
    def end_headers(self) -> bool: ...
    @property
    def ack(self) -> bool: ...

@final
class FrameReader:
    max_frame_size: int
    max_header_block_size: int
    def __init__(
        self,
        max_frame_size: int = 16384,
        max_header_block_size: int = 131072,
        expect_preface: bool = False,
        expect_settings: bool = False,
    ) -> None: ...
    @property
    def buffered(self) -> int: ...
    def feed(self, data: bytes) -> None: ...
    def next_frame(self) -> Frame | _NeedMore: ...

def check_preface(data: bytes) -> int | _NeedMore: ...
def frame_header(length: int, ftype: int, flags: int, stream_id: int) -> bytes: ...
def raw_frame(ftype: int, flags: int, stream_id: int, payload: bytes) -> bytes: ...
def data_frame(stream_id: int, data: bytes, end_stream: bool = False) -> bytes: ...
def headers_frames(stream_id: int, block: bytes, end_stream: bool = False, max_frame_size: int = 16384) -> bytes: ...
def push_promise_frames(
    stream_id: int, promised_stream_id: int, block: bytes, max_frame_size: int = 16384
) -> bytes: ...
def settings_frame(pairs: Sequence[tuple[int, int]] = (), ack: bool = False) -> bytes: ...
def window_update(stream_id: int, increment: int) -> bytes: ...
def rst_stream(stream_id: int, error_code: int) -> bytes: ...
def ping(opaque: bytes, ack: bool = False) -> bytes: ...
def goaway(last_stream_id: int, error_code: int, debug: bytes = b"") -> bytes: ...
def priority(stream_id: int, depends_on: int, weight: int = 16, exclusive: bool = False) -> bytes: ...
