"""Fraud and risk screening of cashier requests, and support's review of held payments."""
