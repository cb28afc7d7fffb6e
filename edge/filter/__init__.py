# The named filters, one module each, loaded by edge/filters.py when a chain names them.
