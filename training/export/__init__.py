"""Write the Hub model repo's contents: the model folder and its card."""
