"""The OpenAI-compatible model, shared by the insights dataflow and the
exercises endpoint: what an insight is and the prompt (analysis), reading
replies (parsing), the rate-limited, retrying calls (calls, faults), the
client built on them (client), the offline analyzer used without a model
(offline), and the exercises (exercises)."""
