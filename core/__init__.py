"""What every stage shares and nothing else: errors a user can fix, task names and label orders,
the cores a process may use. Standard library only; it imports no other package of the project,
and train/, export/, service/ and the `textcls` CLI all sit above it."""
