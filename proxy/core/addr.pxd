# addr.py compiled as is: accepted_meta, authorized_meta, tls_meta and
# redirected_meta build a ConnMeta per accepted (or decrypted, or redirected) connection.

cdef extern from "Python.h":
    # object.__setattr__ without its Python call: sets a slot of the frozen ConnMeta (_fill).
    int _set "PyObject_GenericSetAttr"(object o, object name, object value) except -1

# Every field of a ConnMeta set: a C call from accepted_meta and the copies, not a Python one.
cdef object _fill(object meta, object direction, object client, object local, object orig_dst, object tls,
                  object client_id, object sni, object authz, dict stats_cache)
