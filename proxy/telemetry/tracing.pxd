# Declarations for tracing.py: compiled because a span is made and finished
# for every sampled request; the core reaches it through Python calls only
# (ctx.tracer.begin, span.end), so nothing here is cimported.
