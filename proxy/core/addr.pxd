# addr.py compiled as is: accepted_meta, authorized_meta, tls_meta and
# redirected_meta build a ConnMeta per accepted (or decrypted, or redirected) connection.

cdef extern from "Python.h":
    # object.__setattr__ without its Python call: sets a frozen dataclass's slot (accepted_meta).
    int _set "PyObject_GenericSetAttr"(object o, object name, object value) except -1
