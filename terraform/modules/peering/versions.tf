terraform {
  required_version = ">= 1.6.0"
  required_providers {
    aws = {
      source                = "hashicorp/aws"
      version               = ">= 5.60.0, < 7.0.0"
      configuration_aliases = [aws.requester, aws.accepter]
    }
  }
}
