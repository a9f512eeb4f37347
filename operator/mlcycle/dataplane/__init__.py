"""The data plane: the model server and the router, processes of their own beside the operator."""
