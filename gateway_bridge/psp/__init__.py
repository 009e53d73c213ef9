"""Payment service providers: one module per PSP behind `base.PspAdapter`."""
