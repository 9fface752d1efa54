"""Request time, on the event loop: a request's life from admission to its last event.

`engine` (queue, model loading, hand-off to the scheduler, the events it streams),
`admission` (slots and the bounded queue), `protocol` (the request and its limits).
"""
