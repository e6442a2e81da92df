"""`wsi demo`: a demo cohort cut from the repository's real slides, through tile -> extract -> train -> eval."""
