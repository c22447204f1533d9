# addr.py compiled as is: accepted_meta and authorized_meta build a ConnMeta per accepted connection.
