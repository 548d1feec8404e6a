"""How each family is trained: its data, its optimisation step, its artifact."""
