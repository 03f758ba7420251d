"""AI characters (seed 002): a persona with a language model, knowledge, style and a voice."""
