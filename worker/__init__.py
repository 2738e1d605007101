"""The Flotilla worker: sandboxes, host interfaces and the queue consumer."""
