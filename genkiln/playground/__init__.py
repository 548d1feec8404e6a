"""The playground: a web page to generate, regenerate and judge, in front of any endpoint."""
