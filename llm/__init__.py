"""The OpenAI-compatible model, shared by the insights dataflow and the
exercises endpoint: prompts and reply parsing (analysis), the rate-limited,
retrying client (client), and the offline analyzer used without a model."""
