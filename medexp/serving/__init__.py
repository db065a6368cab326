"""Using a trained model: the assistant that chats and streams (`assistant`), the OpenAI-compatible HTTP app
(`app`), and export: merged checkpoint, model card, registry and Hub (`publish`)."""
