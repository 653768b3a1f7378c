"""Language-model backends shared by earthvl's generators and annotators: one request/result shape, OpenAI-compatible
endpoints and local transformers models (`backends`, options in `options`), a resumable per-record cache (`cache`) and
a bounded, budgeted runner (`runner`); `constrained` keeps a local model's output valid for a JSON schema."""
