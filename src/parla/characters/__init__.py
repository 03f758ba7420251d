"""AI characters (Titans character API): a persona with a language model, knowledge, style and a voice."""
