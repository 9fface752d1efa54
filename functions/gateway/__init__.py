"""The public function: validates requests, streams the generator's tokens as Server-Sent
Events, and speaks OpenAI's completions API. It never imports torch or transformers, so
its image stays small and it cold-starts in well under a second."""
