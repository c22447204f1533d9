# Typed declarations for convert.py.
cimport cython
from proxy.exchange.core cimport Exchange
from proxy.protocol.http1 cimport RequestHead, lower_fields, parse_request_head, rewrite_head

cdef dict _PHRASES
cpdef bytes phrase(int status)
cpdef bytes origin_form(bytes target)
cpdef bytes uri_authority(bytes target)
cpdef tuple h1_request(Exchange ex)
cdef bytes _h1_from_h1(Exchange ex)
@cython.locals(field=object, name=bytes, value=bytes, lines=list, head=list)
cdef tuple _h1_from_h2(Exchange ex)
@cython.locals(field=object, name=bytes)
cpdef list h2_request(Exchange ex, bint orig_proto)
cdef list _h2_from_h1(object head, bint orig_proto)
cdef dict _STATUS_LINES
cdef bytes _status_line(int status)
@cython.locals(field=object, name=bytes, value=bytes, status=int)
cpdef bytes h1_response_from_fields(list fields, bint chunked, bint close, object edit)
cdef dict _STATUS_FIELDS
cdef tuple _status_field(int status)
cpdef list fields_from_h1_response(object rh, object edit)
@cython.locals(field=object)
cpdef list h2_response_fields(list fields, object edit)
cpdef list h2_trailers(object fields)
cpdef bytes trailer_lines(object fields)
cpdef long long content_length(list fields) except? -2
