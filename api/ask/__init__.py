"""POST /v1/ask: a plain-language question turned into a plan over the
served reads (plans.py), by the rules (rules.py) and, for what they do not
answer, a model (model.py); explained (explain.py) and run as the GET
request it stands for (execute.py). `answer` is the whole path."""
