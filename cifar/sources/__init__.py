"""Where data and weights come from: CIFAR-10, the InceptionV3 weights, corruptions, a user's
images, batches."""
