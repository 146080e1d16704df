"""Auth rules as plain typed code: no FastAPI, SQL or broker imports."""
