"""UI: Gradio views over the service layer."""
