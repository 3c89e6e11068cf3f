"""The transfer recipe: frozen DenseNet121 features cached once, a softmax head trained on them, then its
temperature, feature check and model folder (built on the steps before it: data to evaluation)."""
