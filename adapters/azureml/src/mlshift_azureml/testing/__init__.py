"""The Azure ML testing kit (the fake control plane arrives with FakeAzureML)."""
