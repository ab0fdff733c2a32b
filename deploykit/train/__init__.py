"""Training engines every stage that trains shares: the Trainer set-up (trainer), its callbacks (one log line per
evaluation, early stopping, why training stopped), the KD losses and DistillTrainer (kd), and what distillation
does the same for every kind (distillation: teacher, student cut from its layers, the saved folder).
"""
