# addr.py compiled as is: accepted_meta, authorized_meta, tls_meta and
# redirected_meta build a ConnMeta per accepted (or decrypted, or redirected) connection.
