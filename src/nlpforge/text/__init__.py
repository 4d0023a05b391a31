"""Text: normalisation, tokens, phrases, vocabularies and WordPiece."""
