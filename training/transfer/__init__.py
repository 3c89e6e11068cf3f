"""The transfer recipe: frozen DenseNet121 features cached once, and a softmax head trained on them."""
