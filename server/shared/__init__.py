"""Facts and helpers that the server and the operator share; they import nothing of either."""
