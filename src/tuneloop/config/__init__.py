"""The run config: one YAML file per run, validated by a typed schema, overridable with `--set key=value`.

schema: the sections (model, data, train, evaluate, tracking, search) and how a problem is worded; guard: the
train.guard section; search_space: the search.space block and its checks; load: reading YAML and run
directories, `--set` overrides and validation.
"""
