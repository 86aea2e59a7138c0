"""Token ids as a person reads them, the way the headwise engine shows them (tokenizer.rs):
byte-level BPE vocabularies are decoded one token at a time ('Ġthe' shows as ' the'), others
show the vocabulary's piece; special tokens are the tokenizer's added tokens marked special."""


class TokenText:
    """Wraps a transformers tokenizer or a `tokenizers.Tokenizer`."""

    def __init__(self, tokenizer):
        self.hf = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None and hasattr(tokenizer, "id_to_token") and hasattr(tokenizer, "get_added_tokens_decoder"):
            backend = tokenizer  # a tokenizers.Tokenizer
        self.backend = backend
        self.byte_level = False
        self.special = set()
        if backend is not None:
            from tokenizers import decoders

            self.byte_level = isinstance(backend.decoder, decoders.ByteLevel)
            self.special = {i for i, t in backend.get_added_tokens_decoder().items() if t.special}
        else:
            self.special = set(getattr(tokenizer, "all_special_ids", []) or [])

    def display(self, token_id):
        if self.backend is not None:
            if self.byte_level:
                return self.backend.decode([token_id], skip_special_tokens=False)
            return self.backend.id_to_token(token_id) or ""
        return self.hf.convert_ids_to_tokens(token_id)

    def is_special(self, token_id):
        return token_id in self.special

    def decode(self, ids):
        if self.backend is not None:
            return self.backend.decode(ids, skip_special_tokens=True)
        return self.hf.decode(ids, skip_special_tokens=True)
