# Declarations for tracecontext.py: compiled because it runs for every traced
# request (reading the context, writing the span id back); the module's
# classes and functions stay Python objects, nothing here is cimported.
