"""The Faust application the stages run in, what they all write through, and the Faust patches."""
