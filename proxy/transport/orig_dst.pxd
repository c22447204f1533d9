# orig_dst.py compiled as is (per accepted connection, connection_addresses runs once); no C types needed.
